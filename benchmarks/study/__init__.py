"""The apparatus of the GRPO studies (``ig_testbed.py``, ``gpu_ig_run.py``): the warm start they train from
(``warm_start.py``, also a script) and how they run it and ``examples/grpo_ig.py`` as child processes (``runs``).
A script in ``benchmarks/`` has that folder on ``sys.path``, so it imports this package as ``study``."""
