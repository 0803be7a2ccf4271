"""TensorRT: the network definition, the engine builder and the engine check against its ONNX."""
