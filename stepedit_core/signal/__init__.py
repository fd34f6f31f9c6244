"""Signal primitives below QC, mastering and the engines: block IO (blocks.py), gains and
crossfades (gain.py), meters (meters.py: RMS, sample and true peak, K-weighted gated loudness,
loudness range, noise floor, room-tone level), streaming resampling (resample.py) and speech
detection (vad.py: silero-vad over blocks; silero_onnx.py runs its ONNX model with onnxruntime,
speech_hysteresis.py turns its scores into spans).

Every meter is an accumulator fed one block at a time, so a chapter of any length is measured in
the memory of one block plus a few numbers per 10 ms; the in-memory functions feed a whole array
through the same accumulators, so short and long audio take one code path. Nothing here imports
QC, delivery, the engines or the run machinery.
"""
