"""Tests of the in-page path: ONNX export, the page's engine in chromium, the static site."""
