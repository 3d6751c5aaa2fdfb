"""The project's import name, ``mirnet_pipeline``, in a checkout.

The repository keeps its three packages at its top level: ``model/``,
``tasks/`` and ``flows/``. Installed from a wheel (``pip install '.[cpu]'``),
they live in site-packages as ``mirnet_pipeline.model``,
``mirnet_pipeline.tasks`` and ``mirnet_pipeline.flows`` (pyproject.toml maps
the folders), so the project claims no generic top-level names there.

In a checkout whose root is on ``sys.path`` (``./pipeline`` puts it there, as
do pytest and ``python -m`` run from the root), this module stands in for that
package: its ``__path__`` is the root, so ``mirnet_pipeline.model`` is this
checkout's ``model/``, whichever checkout the environment was installed from.
The wheel does not contain this file.
"""

import os

__path__ = [os.path.dirname(os.path.abspath(__file__))]
