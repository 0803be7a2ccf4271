"""SSD300 export: ONNX (fp32, fp16, uint8-nhwc, end2end) with verified parity against the checkpoint.

Parity goes through the runtime's backend interface (:mod:`ssd_export.parity`), so the planned INT8
Q/DQ models and TensorRT engines will be checked by the same call with another backend and tolerance.
"""
