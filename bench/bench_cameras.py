"""Camera benchmarks: what a mock frame costs, and how the mock cameras deliver.

    python bench/bench_cameras.py                 # ~6 s
    python bench/bench_cameras.py --seconds 10 --width 1280 --height 720

Prints:
- synthetic frame cost (render color with text + barcode, depth, JPEG encode, decode),
  ms per frame, and the same relative to a plain 640x480 copy (baseline, same process);
- for each mock camera (RealSense over the pyrealsense2 software_device, UVC over the
  VideoCapture fake, JPEG passthrough): delivered fps, capture-to-publish latency
  (time the worker offers a frame - its capture stamp) p50/p99, and process CPU per frame.
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from duet.hardware.factory import make_camera
from duet.hardware.mock.cameras import FrameRenderer, decode_index
from duet.hardware.rig import CameraSlot, RigConfig


def per_call_ms(fn, n: int) -> float:
    fn()  # warm up
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e3


def bench_render(width: int, height: int, n: int) -> None:
    r = FrameRenderer(width, height, "cam_high", depth=True)
    img = r.color(1, 1.0)
    bgr = np.ascontiguousarray(img[..., ::-1])
    src = np.zeros((height, width, 3), np.uint8)
    k = iter(range(10**9))
    base = per_call_ms(lambda: src.copy(), n)
    color = per_call_ms(lambda: r.color(next(k), 1234.5678), n)
    depth = per_call_ms(lambda: r.depth(next(k)), n)
    jpeg = per_call_ms(lambda: cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90]), n)
    _, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
    dec = per_call_ms(lambda: cv2.imdecode(buf, cv2.IMREAD_COLOR), n)
    idx = per_call_ms(lambda: decode_index(img), n)
    print(f"synthetic {width}x{height} frame, {n} calls each:")
    print(f"  plain copy (baseline)   {base:7.3f} ms")
    print(f"  color (pattern+text+id) {color:7.3f} ms  ({color / base:5.1f}x baseline)")
    print(f"  depth                   {depth:7.3f} ms")
    print(f"  JPEG encode q90         {jpeg:7.3f} ms  ({len(buf) / 1024:.0f} KiB)")
    print(f"  JPEG decode             {dec:7.3f} ms")
    print(f"  decode_index            {idx:7.3f} ms")


def bench_camera(label: str, slot: CameraSlot, seconds: float) -> None:
    cam = make_camera(RigConfig(name="bench", cameras=[slot]), slot.name, use_mock=True)
    cam.connect()
    lat, n = [], 0
    cpu0, t0 = time.process_time(), time.monotonic()
    try:
        while time.monotonic() - t0 < seconds:
            f = cam.wait_for_frame(timeout=1.0)
            if f is None:
                continue
            lat.append(time.monotonic() - f.stamp)
            n += 1
        cpu = time.process_time() - cpu0
        h = cam.health()
    finally:
        cam.disconnect()
    if not lat:
        print(f"  {label:28s} no frames")
        return
    lat_ms = np.array(lat) * 1e3
    print(
        f"  {label:28s} {h['fps']:6.2f} fps (nominal {slot.fps}), latency p50 {np.percentile(lat_ms, 50):6.2f} ms "
        f"p99 {np.percentile(lat_ms, 99):6.2f} ms, CPU {cpu / max(1, h['frames']) * 1e3:5.2f} ms/frame, "
        f"dropped {h['dropped']}, stalls {h['stalls']}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--seconds", type=float, default=1.5, help="run time per mock camera")
    ap.add_argument("--calls", type=int, default=200, help="calls per micro-benchmark")
    a = ap.parse_args(argv)
    bench_render(a.width, a.height, a.calls)
    print(f"mock cameras {a.width}x{a.height}@{a.fps}, {a.seconds:.1f} s each:")
    common = dict(width=a.width, height=a.height, fps=a.fps, serial="BENCH0")
    bench_camera("realsense (software_device)", CameraSlot(name="rs", kind="realsense", **common), a.seconds)
    bench_camera(
        "realsense + aligned depth", CameraSlot(name="rsd", kind="realsense", depth=True, **common), a.seconds
    )
    bench_camera("opencv (VideoCapture fake)", CameraSlot(name="uvc", kind="opencv", **common), a.seconds)
    bench_camera(
        "opencv MJPG passthrough", CameraSlot(name="mjpg", kind="opencv", jpeg=True, **common), a.seconds
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
