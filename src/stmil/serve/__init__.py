"""``stmil serve DIR``: a read-only web viewer of runs, test videos and their scores.

:mod:`stmil.serve.catalog` and :mod:`stmil.serve.videos` find what ``DIR`` holds and read it
through stmil's own readers into plain JSON-ready dicts (no web framework needed);
:mod:`stmil.serve.app` is the small Starlette app over them (the ``serve`` extra), with the
pages in ``static/`` (plain HTML, CSS and JavaScript, no build step, nothing from the network).
See ``docs/serve.md``.
"""
