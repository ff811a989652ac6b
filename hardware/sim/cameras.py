"""Sim cameras behind the Camera interface: offscreen MuJoCo renders of the shared world.

Rendering is headless OpenGL: EGL when it works (a GPU, or Mesa's software EGL), otherwise
OSMesa. The choice is made once per process (`gl_backend()`): MUJOCO_GL=osmesa forces
OSMesa; otherwise EGL is probed in a child process (an EGL failure cannot be undone inside
a process that already loaded PyOpenGL for EGL) and the result is kept in DUET_SIM_GL for
child processes.

Timing follows the world's mode:
- lockstep: read() renders when a frame is due on the camera's fps grid of simulated time
  (the render happens in the caller's thread while simulated time stands still), so every
  frame shows the state at its stamp exactly;
- real time: a worker thread renders at up to fps from the live world and read() returns
  the latest frame without blocking; a frame older than max_age_s is reported stale.

Render quality (QUALITIES): "fast" by default, "full" as gym-aloha renders; set
world.render_quality before connecting cameras, or pass quality= to SimCamera.

Intrinsics (sim_intrinsics): from the scene camera's vertical field of view and the render
size, fy = h / (2 tan(fovy / 2)), fx = fy (square pixels), principal point at the image
centre ((w - 1) / 2, (h - 1) / 2 in pixel-centre coordinates), no distortion.

Rig camera names map to the scene's cameras: cam_high -> top, cam_low -> angle,
cam_left_wrist -> left_wrist, cam_right_wrist -> right_wrist, cam_front -> front_close; a
scene camera name (e.g. top, left_pillar) can be used directly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np

from duet.errors import ConfigError, DuetError
from duet.hardware.cameras.intrinsics import Intrinsics, fovy_intrinsics
from duet.hardware.interfaces import CameraFeatures, CameraReading, Frame
from duet.hardware.sim.world import SimWorld

# Render quality: "full" is the scene as gym-aloha renders it (shadows, 4x multisampling);
# "fast" drops shadows, reflections and multisampling (5-10x faster with software GL).
QUALITIES = ("fast", "full")

SCENE_CAMERAS = {
    "cam_high": "top",
    "cam_low": "angle",
    "cam_left_wrist": "left_wrist",
    "cam_right_wrist": "right_wrist",
    "cam_front": "front_close",
}

_GL_LOCK = threading.Lock()
_CREATE_LOCK = threading.Lock()
_GL: str | None = None
_EGL_PROBE = "from mujoco.egl import GLContext\nc = GLContext(16, 16)\nc.make_current()\nc.free()\n"


def gl_backend() -> str:
    """'egl' or 'osmesa', decided once per process (see module doc)."""
    global _GL
    with _GL_LOCK:
        if _GL is not None:
            return _GL
        want = (os.environ.get("DUET_SIM_GL") or os.environ.get("MUJOCO_GL") or "egl").lower()
        loaded = os.environ.get("PYOPENGL_PLATFORM", "").lower() if "OpenGL" in sys.modules else ""
        if loaded in ("egl", "osmesa"):
            choice = loaded  # PyOpenGL is already bound to a platform in this process
        elif want == "osmesa" or os.environ.get("DUET_SIM_GL"):
            choice = "osmesa" if want == "osmesa" else "egl"
        else:
            env = {**os.environ, "MUJOCO_GL": "egl", "PYOPENGL_PLATFORM": "egl"}
            try:
                ok = (
                    subprocess.run(
                        [sys.executable, "-c", _EGL_PROBE], env=env, capture_output=True, timeout=120
                    ).returncode
                    == 0
                )
            except (OSError, subprocess.TimeoutExpired):
                ok = False
            choice = "egl" if ok else "osmesa"
        if not loaded:
            os.environ["PYOPENGL_PLATFORM"] = choice
        os.environ["MUJOCO_GL"] = choice
        os.environ["DUET_SIM_GL"] = choice
        _GL = choice
        return choice


def _gl_context_class():
    backend = gl_backend()
    try:
        if backend == "egl":
            from mujoco.egl import GLContext
        else:
            from mujoco.osmesa import GLContext
    except Exception as e:
        raise DuetError(
            f"MuJoCo rendering ({backend}): {e}; install libegl1 or libosmesa6 (apt-get install libegl1 libosmesa6)"
        ) from None
    return GLContext


class Renderer:
    """Renders one scene camera of a world into RGB (and optionally depth) arrays.

    Owns a GL context: create, use and close it from one thread.
    """

    def __init__(
        self,
        world: SimWorld,
        camera: str,
        width: int,
        height: int,
        depth: bool = False,
        quality: str = "fast",
    ):
        import mujoco

        self.world = world
        model = world.model
        cam_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        if cam_id < 0:
            have = ", ".join(model.camera(i).name for i in range(model.ncam))
            raise ConfigError(f"sim camera {camera!r}: not in the scene (have {have})")
        if quality not in QUALITIES:
            raise ConfigError(
                f"sim camera {camera!r}: render quality {quality!r} is not one of {', '.join(QUALITIES)}"
            )
        fast = quality == "fast"
        self.width, self.height, self.depth = int(width), int(height), bool(depth)
        GLContext = _gl_context_class()
        # Not under the world lock: building a context uploads meshes and textures (slow in
        # software GL) and only reads the model, which physics never writes. The renderer
        # lock keeps renderers from racing on the visual settings patched below.
        with _CREATE_LOCK:
            # The offscreen buffer must hold the largest viewport rendered from this model.
            g = model.vis.global_
            g.offwidth = max(int(g.offwidth), self.width)
            g.offheight = max(int(g.offheight), self.height)
            self._gl = GLContext(max(self.width, int(g.offwidth)), max(self.height, int(g.offheight)))
            self._gl.make_current()
            samples = int(model.vis.quality.offsamples)
            if fast:
                model.vis.quality.offsamples = 0  # multisampling is read when the context is made
            try:
                self._ctx = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150)
            finally:
                model.vis.quality.offsamples = samples
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._ctx)
        self._scene = mujoco.MjvScene(model, maxgeom=2000)
        if fast:
            # Software GL: shadows, reflections and 4x multisampling cost 5-10x the rest.
            self._scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            self._scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        self._opt = mujoco.MjvOption()
        self._cam = mujoco.MjvCamera()
        self._cam.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._cam.fixedcamid = cam_id
        self._rect = mujoco.MjrRect(0, 0, self.width, self.height)
        extent = float(model.stat.extent)
        self._near = float(model.vis.map.znear) * extent
        self._far = float(model.vis.map.zfar) * extent

    def capture(self) -> None:
        """Copy the world's current state into the scene (call with the world lock held
        or let this take it); cheap compared to render()."""
        import mujoco

        with self.world.lock:
            mujoco.mjv_updateScene(
                self.world.model,
                self.world.data,
                self._opt,
                None,
                self._cam,
                mujoco.mjtCatBit.mjCAT_ALL,
                self._scene,
            )

    def render(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Rasterise the captured scene: (H, W, 3) uint8 RGB, and (H, W) uint16 depth in mm."""
        import mujoco

        self._gl.make_current()
        mujoco.mjr_render(self._rect, self._scene, self._ctx)
        rgb = np.empty((self.height, self.width, 3), dtype=np.uint8)
        z = np.empty((self.height, self.width), dtype=np.float32) if self.depth else None
        mujoco.mjr_readPixels(rgb, z, self._rect, self._ctx)
        rgb = np.ascontiguousarray(rgb[::-1])
        depth = None
        if z is not None:
            # Depth buffer (0..1, non-linear) to metres, then millimetres as a RealSense reports.
            n, f = self._near, self._far
            metres = n / (1.0 - z[::-1] * (1.0 - n / f))
            depth = np.clip(np.rint(metres * 1000.0), 0, 65535).astype(np.uint16)
        return rgb, depth

    def close(self) -> None:
        if self._ctx is not None:
            self._ctx.free()
            self._ctx = None
        if self._gl is not None:
            self._gl.free()
            self._gl = None


def scene_camera(name: str) -> str:
    return SCENE_CAMERAS.get(name, name)


def sim_intrinsics(model: Any, camera: str, width: int, height: int) -> Intrinsics:
    """The intrinsics of a MuJoCo camera rendered at width x height (see the module doc).
    OpenGL renders the vertical field of view fovy over the full image height and keeps
    pixels square, so the horizontal one follows from the aspect ratio."""
    import mujoco

    cam_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
    if cam_id < 0:
        raise ConfigError(f"sim camera {camera!r}: not in the scene")
    if float(model.cam_sensorsize[cam_id][1]) > 0:
        raise ConfigError(
            f"sim camera {camera!r}: a MuJoCo camera with sensorsize/focal is not supported for intrinsics; "
            "give it fovy instead"
        )
    return fovy_intrinsics(float(model.cam_fovy[cam_id]), width, height, source=f"sim camera {camera}")


class SimCamera:
    """A camera of the sim rig; see the module doc for lockstep vs real-time timing."""

    def __init__(
        self,
        world: SimWorld,
        name: str,
        clock: Any,
        width: int = 320,
        height: int = 240,
        fps: float = 50.0,
        depth: bool = False,
        max_age_s: float = 0.1,
        scene_name: str | None = None,
        quality: str | None = None,
    ):
        if width <= 0 or height <= 0 or fps <= 0:
            raise ConfigError(f"sim camera {name!r}: width, height and fps must be > 0")
        self.world = world
        self.name = name
        self.clock = clock
        self.scene_name = scene_name or scene_camera(name)
        self.max_age_s = float(max_age_s)
        self.quality = quality or world.render_quality
        if self.quality not in QUALITIES:
            raise ConfigError(
                f"sim camera {name!r}: render quality {self.quality!r} is not one of {', '.join(QUALITIES)}"
            )
        self.features = CameraFeatures(
            name=name, width=int(width), height=int(height), fps=float(fps), has_depth=bool(depth)
        )
        import mujoco

        if mujoco.mj_name2id(world.model, mujoco.mjtObj.mjOBJ_CAMERA, self.scene_name) < 0:
            have = ", ".join(world.model.camera(i).name for i in range(world.model.ncam))
            raise ConfigError(
                f"sim camera {name!r}: no scene camera {self.scene_name!r} (name it one of {have}, "
                f"or {', '.join(SCENE_CAMERAS)})"
            )
        self._connected = False
        self._mode = ""
        self._renderer: Renderer | None = None
        self._frame: Frame | None = None
        self._index = 0
        self._next_due = -np.inf
        self._grid0: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._render_s = 0.0
        self._stale_reads = 0

    @property
    def is_connected(self) -> bool:
        return self._connected

    @property
    def period(self) -> float:
        return 1.0 / self.features.fps

    def intrinsics(self) -> Intrinsics:
        """The rendered frames' intrinsics, from the scene camera's fovy (sim_intrinsics)."""
        f = self.features
        return sim_intrinsics(self.world.model, self.scene_name, f.width, f.height)

    def _new_renderer(self) -> Renderer:
        f = self.features
        return Renderer(self.world, self.scene_name, f.width, f.height, f.has_depth, self.quality)

    def connect(self) -> None:
        if self._connected:
            return
        self._mode = self.world.attach(self, self.clock)
        self._connected = True
        self._stop.clear()
        self._error = None
        if self._mode == "realtime":
            started = threading.Event()
            self._thread = threading.Thread(
                target=self._worker, args=(started,), name=f"sim-cam-{self.name}", daemon=True
            )
            self._thread.start()
            started.wait(timeout=60.0)
            if self._error is not None:
                err = self._error
                self.disconnect()
                raise err
        else:
            try:
                self._renderer = self._new_renderer()
            except BaseException:
                self._connected = False
                self.world.detach(self)
                raise

    def disconnect(self) -> None:
        if not self._connected:
            return
        self._connected = False
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
            self._thread = None
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self.world.detach(self)

    def _grab(self, renderer: Renderer) -> None:
        stamp = float(self.clock.now())
        renderer.capture()
        t0 = time.perf_counter()
        rgb, depth = renderer.render()
        self._render_s += time.perf_counter() - t0
        with self._lock:
            self._index += 1
            self._frame = Frame(stamp=stamp, index=self._index, color=rgb, depth=depth)

    def _worker(self, started: threading.Event) -> None:
        try:
            renderer = self._new_renderer()
        except BaseException as e:  # reported by connect()
            self._error = e
            started.set()
            return
        started.set()
        try:
            due = float(self.clock.now())
            while not self._stop.is_set():
                self._grab(renderer)
                due += self.period
                now = float(self.clock.now())
                if now > due:  # rendering is slower than fps: keep the grid, skip what was missed
                    due += np.floor((now - due) / self.period + 1.0) * self.period
                self._stop.wait(max(0.0, due - float(self.clock.now())))
        except BaseException as e:  # a dead worker shows as a stale camera, and in health()
            self._error = e
        finally:
            renderer.close()

    def read(self) -> CameraReading:
        if not self._connected:
            return CameraReading(frame=self._frame, age=self._age(self._frame), stale=True, connected=False)
        if self._mode == "lockstep":
            now = float(self.clock.now())
            if self._frame is None or now >= self._next_due - 1e-6:
                if self._renderer is None:
                    raise DuetError(f"sim camera {self.name!r}: renderer closed; reconnect the camera")
                self._grab(self._renderer)
                # Frames fall on the fps grid of simulated time, anchored at the first frame.
                if self._grid0 is None:
                    self._grid0 = now
                k = np.floor((now - self._grid0) / self.period + 1e-6) + 1.0
                self._next_due = self._grid0 + k * self.period
        with self._lock:
            frame = self._frame
        age = self._age(frame)
        stale = age > self.max_age_s
        if stale:
            self._stale_reads += 1
        return CameraReading(frame=frame, age=age, stale=stale, connected=True)

    def _age(self, frame: Frame | None) -> float:
        return float("inf") if frame is None else max(0.0, float(self.clock.now()) - frame.stamp)

    def health(self) -> dict[str, Any]:
        n = self._index
        return {
            "backend": "sim",
            "camera": self.name,
            "scene_camera": self.scene_name,
            "connected": self._connected,
            "mode": self._mode,
            "gl": _GL or "",
            "quality": self.quality,
            "frames": n,
            "render_ms_mean": round(1e3 * self._render_s / n, 3) if n else 0.0,
            "stale_reads": self._stale_reads,
            "error": "" if self._error is None else f"{type(self._error).__name__}: {self._error}",
        }
