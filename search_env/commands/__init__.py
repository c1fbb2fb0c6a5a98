"""The ``search-env`` command (:mod:`~search_env.commands.cli`) and its subcommands' front ends: the demo, ``eval
--compare``, ``view``. What they share with library code lives in the library: DIG labels in
:mod:`search_env.info_gain.dig`, the resumable JSONL files in :mod:`search_env.data.jsonl`. The one module here a
library module may import is :mod:`~search_env.commands.args` (argparse pieces, importing nothing of the package),
which the retrieval server's own command line uses; no library module imports the CLI or its subcommands."""
