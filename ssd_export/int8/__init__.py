"""INT8: calibration sets, the quantizers (ONNX Runtime, ModelOpt) behind one finishing pipeline, and the search."""
