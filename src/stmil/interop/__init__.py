"""Research interop: the community's feature and ground-truth files (see docs/formats.md).

- :mod:`stmil.interop.import_features`: RTFM / MGFN, UR-DMU and Sultani feature files ->
  stmil grid-1 feature files;
- :mod:`stmil.interop.gt`: the frame-label vector and frame scores of a test list, in the
  convention of those projects' evaluation scripts (``.npy`` plus a manifest);
- :mod:`stmil.interop.export`: stmil features as those projects' loaders read them;
- :mod:`stmil.interop.order`: the one video order of those outputs (a list's, or the dataset's).

Their conventions are here, importable without numpy (the CLI's choices come from them).
"""

FORMATS = ("rtfm", "urdmu", "sultani")  # the foreign feature formats import_features reads
TAILS = ("clips", "frames")  # a vector's entries per video: stride x clips, or one per frame
CONVENTIONS = ("stmil", "rtfm")  # frame labels: the correct reading, or RTFM's gt-ucf.npy rule
LAYOUTS = ("plain", "rtfm", "urdmu")  # export-features: (T, C) files, RTFM's, UR-DMU's
