"""The book's application: what each chapter trains, evaluates, tabulates and draws, and the papermill +
Jupyter Book build.  It uses the library; the library never imports it (``tests/test_layers.py``).
Its extras: ``pip install hrvlm[book]`` (matplotlib, networkx, Jupyter Book, papermill)."""
