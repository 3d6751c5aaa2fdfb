"""Exported models: SavedModel, ONNX and OpenVINO files written through Keras'
own exporters (``formats``), the runtimes that run them behind the interface
the inference helpers use (``runtimes``), and the check that an export computes
what the Keras model computes (``verification``)."""
