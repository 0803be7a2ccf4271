"""SSD300 export: ONNX with verified parity, INT8 Q/DQ, TensorRT engines, serving artifacts."""
