# pytest shares conftest fixtures only down a directory tree: the site fixtures live with predictor's tests.
from predictor.tests.conftest import *  # noqa: F401,F403
