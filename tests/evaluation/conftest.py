"""Evaluation fixtures: the digits classifier is trained once per session, into the session's tmp cache."""
import pytest


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory):
    """The cache dir tests/conftest.py points FIELDGEN_CACHE_DIR at, for session-scoped fixtures (which are set
    up before that function-scoped setting)."""
    return tmp_path_factory.getbasetemp() / "fieldgen-cache"


@pytest.fixture(scope="session")
def digits_cnn(session_cache):
    from evaluation.extractors import get_extractor

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FIELDGEN_CACHE_DIR", str(session_cache))
        return get_extractor("digits-cnn")


@pytest.fixture(scope="session")
def digits_splits():
    from evaluation.extractors.classifier import CLASSIFIERS, labelled_splits

    return labelled_splits(CLASSIFIERS["digits-cnn"])
