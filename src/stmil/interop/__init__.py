"""Research interop: the community's feature and ground-truth files (see docs/formats.md).

- :mod:`stmil.interop.import_features`: RTFM / MGFN, UR-DMU and Sultani feature files ->
  stmil grid-1 feature files;
- :mod:`stmil.interop.gt`: the frame-label vector and frame scores of a test list, in the
  convention of those projects' evaluation scripts (``.npy`` plus a manifest).

Their conventions are here, importable without numpy (the CLI's choices come from them).
"""

FORMATS = ("rtfm", "urdmu", "sultani")  # the foreign feature formats import_features reads
TAILS = ("clips", "frames")  # a vector's entries per video: stride x clips, or one per frame
