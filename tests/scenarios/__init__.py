"""One scenario suite, two worlds: the namespace test bed (tests/lab.py, run by pytest) and the
Vagrant machines (vagrant/, run by `make vagrant-test`). Scenarios are written once in `suite.py`
against the `World` protocol in `world.py`; each world is a small adapter."""
