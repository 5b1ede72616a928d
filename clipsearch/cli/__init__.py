"""clipsearch.cli: the ``clipsearch`` command line (Typer), a thin face over the library.

- ``app``: the root command, ``index``, ``search``, ``status``, ``models``, and ``main`` —
  the console-script entry point and the one error boundary (a `ClipsearchError` becomes
  one ``error:`` line and its exit code);
- ``options``: the options several commands share (library, model, precision, JSON,
  where, top), declared once, with choices taken from the modules that own each concept;
- ``render``: Rich progress bars, result tables and status — the only printing;
- ``entry``: the console script: a plain text search or ``index`` run without building
  Typer's parser (``warm`` hands a search to a running server, which renders the output
  for this terminal with ``terminal``; ``index_run`` is the ``index`` command's body),
  everything else to ``app``;
- ``ann_cmd``: ``index-info``, ``reindex``; ``classify_cmd``: ``classify``, ``tag``,
  ``moderate``, ``dedup``; ``eval_cmd``: ``eval retrieval | classify | synth``;
  ``serve_cmd``: ``serve``; ``train_cmd``: ``train``.

docs/cli.md is generated from these commands' ``--help`` (scripts/gen_cli_docs.py).
"""
