"""Batch image enhancement with MIRNet, MIRNet-v2 and plain CNNs.

Three rooms, imported one way (``flows -> tasks -> model``):

- ``mirnet_pipeline.model``: Keras 3 architectures, losses, metrics and inference;
- ``mirnet_pipeline.tasks``: each stage's work as plain functions;
- ``mirnet_pipeline.flows``: the Prefect flows that chain them, and the commands.

The repository also shows them at its top level (``model/``, ``tasks/`` and
``flows/`` are links into this package); ``docs/design.md`` is the house's plan.
"""
