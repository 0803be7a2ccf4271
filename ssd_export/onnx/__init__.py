"""ONNX export: the float variants (fp32, fp16, uint8-nhwc, end2end), their wrappers and the NMS tail, and verify."""
