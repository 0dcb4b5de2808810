"""After training: evaluation of any model file, export to ONNX and TFLite."""
