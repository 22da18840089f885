"""Research interop: the community's feature and ground-truth files (see docs/formats.md).

- :mod:`stmil.interop.import_features`: RTFM / MGFN, UR-DMU and Sultani feature files ->
  stmil grid-1 feature files;
- :mod:`stmil.interop.gt`: the frame-label vector and frame scores of a test list, in the
  convention of those projects' evaluation scripts (``.npy`` plus a manifest).
"""
