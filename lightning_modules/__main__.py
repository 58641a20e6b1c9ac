"""`python -m lightning_modules`: print the README's methods x domains table from the registry."""
from lightning_modules import methods_table

print(methods_table())
