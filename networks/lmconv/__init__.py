"""LMConv: locally masked convolutions, generation orders and their masks, the locally masked PixelCNN and its
output likelihoods (Jain, Abbeel, Pathak 2020; thesis ch. 2)."""
