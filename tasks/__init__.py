"""The work of each pipeline stage as plain, testable functions (data,
training and evaluation, batch enhancement), plus the modules every stage
shares: configuration (``config``), where artefacts live (``artifacts``),
files written whole (``storage``) and the local services (``services``).
Imports ``model``, never ``flows``."""
