"""The ``search-env`` command (:mod:`~search_env.commands.cli`) and what only commands use: the demo, DIG labels,
the resumable JSONL files of ``eval`` and ``dig``, and the shared argument parsing. No library module imports
:mod:`~search_env.commands.cli`."""
