"""Camera intrinsics from each source: the sim (fovy, checked against MuJoCo's own renders),
a camera_calibration_parsers YAML (UVC cameras), and the RealSense SDK (the mock runs on
rs.software_device and is read back through the SDK as a real device is)."""

import importlib.util
import threading
import types

import numpy as np
import pytest

from duet.errors import ConfigError
from duet.hardware import factory
from duet.hardware.cameras.intrinsics import (
    Intrinsics,
    calibration_yaml,
    camera_intrinsics,
    fovy_intrinsics,
    from_realsense,
    load_calibration_yaml,
    parse_calibration,
)
from duet.hardware.rig import CameraSlot, RigConfig

HAVE_RS = importlib.util.find_spec("pyrealsense2") is not None
needs_rs = pytest.mark.skipif(not HAVE_RS, reason="pyrealsense2 not installed")

# What `ros2 run camera_calibration cameracalibrator` saves (camera_calibration_parsers format).
SAMPLE = """\
image_width: 640
image_height: 480
camera_name: narrow_stereo
camera_matrix:
  rows: 3
  cols: 3
  data: [612.5, 0.0, 318.25, 0.0, 611.75, 243.5, 0.0, 0.0, 1.0]
distortion_model: plumb_bob
distortion_coefficients:
  rows: 1
  cols: 5
  data: [0.125, -0.25, 0.001, -0.002, 0.0625]
rectification_matrix:
  rows: 3
  cols: 3
  data: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
projection_matrix:
  rows: 3
  cols: 4
  data: [600.0, 0.0, 320.0, 0.0, 0.0, 605.0, 240.0, 0.0, 0.0, 0.0, 1.0, 0.0]
"""


def _rig(slot: CameraSlot, **kw) -> RigConfig:
    return RigConfig(name="cams", cameras=[slot], **kw)


# --------------------------------------------------------------------------- the model


def test_uncalibrated_is_size_and_zeros():
    u = Intrinsics.uncalibrated(320, 240)
    assert not u.calibrated and (u.width, u.height) == (320, 240)
    assert not u.K.any() and not u.P.any() and not u.R.any() and u.D() == []
    assert u.scaled(160, 120) == Intrinsics.uncalibrated(160, 120)
    with pytest.raises(ValueError):
        u.project(np.array([[0.0, 0.0, 1.0]]))


def test_scaling_keeps_every_ray_on_the_same_spot_of_the_picture():
    k = Intrinsics(640, 480, fx=600.0, fy=610.0, cx=321.5, cy=238.0, distortion=(0.1, 0, 0, 0, 0))
    half = k.scaled(320, 240)
    pts = np.array([[0.1, -0.05, 1.0], [-0.3, 0.2, 2.0], [0.0, 0.0, 0.7]])
    # pixel centres: a position u at full size is (u + 0.5) / 2 - 0.5 at half size
    assert np.allclose(half.project(pts), (k.project(pts) + 0.5) / 2.0 - 0.5)
    assert half.distortion == k.distortion and half.P[0, 0] == pytest.approx(300.0)
    assert np.allclose(half.P[:, :3], half.K)
    assert k.scaled(640, 480) is k


# --------------------------------------------------------------------------- calibration YAML


def test_calibration_yaml_parses_every_field(tmp_path):
    p = tmp_path / "cam.yaml"
    p.write_text(SAMPLE)
    name, k = load_calibration_yaml(p)
    assert name == "narrow_stereo"
    assert (k.width, k.height, k.fx, k.fy, k.cx, k.cy) == (640, 480, 612.5, 611.75, 318.25, 243.5)
    assert k.distortion_model == "plumb_bob" and k.D() == [0.125, -0.25, 0.001, -0.002, 0.0625]
    assert k.R.tolist() == np.eye(3).tolist()
    assert k.P.tolist() == [[600.0, 0.0, 320.0, 0.0], [0.0, 605.0, 240.0, 0.0], [0.0, 0.0, 1.0, 0.0]]
    # written back in the same format, it reads the same
    assert (
        parse_calibration(__import__("yaml").safe_load(calibration_yaml(k, name)))[1].P.tolist()
        == k.P.tolist()
    )


@pytest.mark.parametrize(
    "edit, says",
    [
        (lambda t: t.replace("image_width: 640\n", ""), "image_width missing"),
        (
            lambda t: t.replace("rows: 3\n  cols: 3\n  data: [612.5", "rows: 2\n  cols: 3\n  data: [612.5"),
            "camera_matrix is 2x3",
        ),
        (lambda t: t.replace("plumb_bob", "fisheye_x"), "distortion_model 'fisheye_x'"),
        (lambda t: t.replace("[612.5,", "[0.0,"), "no focal length"),
        (lambda t: t + "  : [\n", "not valid YAML"),
    ],
)
def test_bad_calibration_files_are_one_line_config_errors(tmp_path, edit, says):
    p = tmp_path / "cam.yaml"
    p.write_text(edit(SAMPLE))
    with pytest.raises(ConfigError, match=says) as e:
        load_calibration_yaml(p)
    assert "\n" not in str(e.value) and str(p) in str(e.value)
    with pytest.raises(ConfigError, match="cannot read it.*cameras\\[\\].calibration"):
        load_calibration_yaml(tmp_path / "missing.yaml")


def test_uvc_camera_intrinsics_from_the_rig_calibration_file(tmp_path):
    (tmp_path / "uvc.yaml").write_text(SAMPLE)
    # relative to the rig's calibration_dir, as arm calibrations are
    rig = _rig(
        CameraSlot(name="cam_uvc", kind="opencv", device="0", width=320, height=240, calibration="uvc.yaml"),
        calibration_dir=str(tmp_path),
    )
    assert rig.camera("cam_uvc").calibration == str(tmp_path / "uvc.yaml")
    cam = factory.make_camera(rig, "cam_uvc", use_mock=True)
    k = camera_intrinsics(cam)
    assert k.calibrated and (k.width, k.height) == (320, 240)  # the stream is 320x240: scaled
    assert k.fx == pytest.approx(612.5 / 2) and k.cx == pytest.approx((318.25 + 0.5) / 2 - 0.5)
    assert k.distortion_model == "plumb_bob" and len(k.D()) == 5

    # no calibration file: uncalibrated (CameraInfo with zeros, per sensor_msgs)
    plain = factory.make_camera(_rig(CameraSlot(name="c", kind="opencv", device="0")), "c", use_mock=True)
    k = camera_intrinsics(plain)
    assert not k.calibrated and (k.width, k.height) == (640, 480) and "no cameras[].calibration" in k.source

    # another aspect ratio: the calibration does not describe this mode
    bad = _rig(
        CameraSlot(
            name="c", kind="opencv", device="0", width=320, height=180, calibration=str(tmp_path / "uvc.yaml")
        )
    )
    with pytest.raises(ConfigError, match="another aspect ratio"):
        factory.make_camera(bad, "c", use_mock=True)


# --------------------------------------------------------------------------- RealSense


@needs_rs
@pytest.mark.timeout(30)
def test_mock_realsense_intrinsics_come_through_the_sdk():
    import pyrealsense2 as rs

    from duet.hardware.mock.cameras import mock_realsense_intrinsics

    slot = CameraSlot(
        name="cam_high", kind="realsense", serial="SN1", width=640, height=480, fps=30, depth=True
    )
    cam = factory.make_camera(_rig(slot), "cam_high", use_mock=True)
    assert cam.intrinsics() is None  # not known before the stream starts
    cam.connect()
    try:
        k = cam.intrinsics()
        # a D435 color stream's values at 640x480, read back with get_intrinsics()
        assert (k.width, k.height) == (640, 480)
        assert (k.fx, k.fy, k.cx, k.cy) == pytest.approx((617.31, 617.52, 324.27, 241.93), abs=1e-3)
        assert k.distortion_model == "plumb_bob" and k.D() == [0.0] * 5
        assert "inverse_brown_conrady" in k.source
    finally:
        cam.disconnect()
    small = mock_realsense_intrinsics(320, 240)
    assert small["fx"] == pytest.approx(617.31 / 2) and small["ppx"] == pytest.approx(159.5 + 4.77 / 2)

    kb = rs.intrinsics()
    kb.width, kb.height, kb.fx, kb.fy, kb.ppx, kb.ppy = 848, 800, 286.0, 286.5, 421.0, 399.0
    kb.model, kb.coeffs = rs.distortion.kannala_brandt4, [-0.01, 0.04, -0.04, 0.007, 0.0]
    t265 = from_realsense(kb)
    assert t265.distortion_model == "equidistant" and t265.D() == pytest.approx([-0.01, 0.04, -0.04, 0.007])


@needs_rs
def test_realsense_calibration_file_overrides_the_sdk(tmp_path):
    (tmp_path / "rs.yaml").write_text(SAMPLE)
    slot = CameraSlot(name="c", kind="realsense", serial="SN1", calibration=str(tmp_path / "rs.yaml"))
    cam = factory.make_camera(_rig(slot), "c", use_mock=True)
    k = cam.intrinsics()  # known before connecting: it is the file's
    assert k.fx == 612.5 and "calibration" in k.source


# --------------------------------------------------------------------------- sim


def test_fovy_intrinsics_math():
    k = fovy_intrinsics(90.0, 320, 240)
    assert k.fy == pytest.approx(120.0) and k.fx == k.fy and (k.cx, k.cy) == (159.5, 119.5)
    with pytest.raises(ConfigError):
        fovy_intrinsics(180.0, 320, 240)


SCENE = """
<mujoco>
  <visual>
    <headlight ambient="0 0 0" diffuse="0 0 0" specular="0 0 0"/>
    <map znear="0.01" zfar="20"/>
  </visual>
  <asset><material name="glow" emission="1" rgba="1 1 1 1"/></asset>
  <worldbody>
    <body name="mount" pos="0.3 -0.2 1.1" euler="25 -15 40">
      <camera name="eye" pos="0.02 0.01 0" euler="10 5 0" fovy="{fovy}"/>
    </body>
    <body name="r" mocap="true"><geom type="sphere" size="{r}" material="glow" rgba="1 0 0 1"/></body>
    <body name="g" mocap="true"><geom type="sphere" size="{r}" material="glow" rgba="0 1 0 1"/></body>
    <body name="b" mocap="true"><geom type="sphere" size="{r}" material="glow" rgba="0 0 1 1"/></body>
  </worldbody>
</mujoco>
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fovy, size", [(50.0, (320, 240)), (20.0, (120, 160))])
def test_sim_intrinsics_match_where_mujoco_draws_a_point(fovy, size):
    """Three glowing spheres at known points of the camera's optical frame: the centroid of
    each in MuJoCo's own render is where the intrinsics project its centre."""
    mujoco = pytest.importorskip("mujoco")
    from duet.hardware.sim.cameras import Renderer, sim_intrinsics

    width, height = size
    fy = height / (2 * np.tan(np.radians(fovy) / 2))
    radius = 6.0 / fy  # spheres ~6 px in radius at 1 m
    model = mujoco.MjModel.from_xml_string(SCENE.format(fovy=fovy, r=radius))
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    k = sim_intrinsics(model, "eye", width, height)
    assert k.fy == pytest.approx(fy) and k.fx == k.fy
    cam = model.camera("eye").id
    pos, rot = data.cam_xpos[cam].copy(), data.cam_xmat[cam].reshape(3, 3).copy()
    # optical frame (x right, y down, z forward) -> MuJoCo camera frame (x right, y up, -z forward)
    z = 1.0
    half_w, half_h = (width / 2 - 12) / k.fx * z, (height / 2 - 12) / k.fy * z
    points = np.array([[0.0, 0.0, z], [0.8 * half_w, -0.6 * half_h, z], [-0.9 * half_w, 0.85 * half_h, z]])
    for i, p in enumerate(points):
        data.mocap_pos[i] = pos + rot @ (p * np.array([1.0, -1.0, -1.0]))
    mujoco.mj_forward(model, data)
    world = types.SimpleNamespace(model=model, data=data, lock=threading.Lock())
    r = Renderer(world, "eye", width, height, quality="fast")
    try:
        r.capture()
        rgb, _ = r.render()
    finally:
        r.close()
    # a sphere's outline is an ellipse centred at f (x z, y z) / (z^2 - r^2) from the principal
    # point: its centre's projection pushed out by z^2 / (z^2 - r^2)
    zz = points[:, 2:] ** 2
    want = k.project(points * np.hstack([zz / (zz - radius**2)] * 2 + [np.ones_like(zz)]))
    v, u = np.mgrid[0:height, 0:width]
    for ch in range(3):
        img = rgb[..., ch].astype(np.float64)
        mask = (img > 40) & (rgb.sum(axis=-1) - rgb[..., ch] < 40)
        w = img * mask
        assert mask.sum() > 10, f"sphere {ch} not drawn"
        got = np.array([(w * u).sum() / w.sum(), (w * v).sum() / w.sum()])
        assert np.abs(got - want[ch]).max() < 0.2, f"sphere {ch}: drawn at {got}, intrinsics say {want[ch]}"


def test_sim_camera_reports_its_scene_cameras_fovy():
    pytest.importorskip("mujoco")
    from duet.hardware.rig import load_rig
    from duet.hardware.sim import make_sim_camera, sim_world

    rig = load_rig("aloha_sim", ["name=sim_intrinsics_test"])
    try:
        world = sim_world(rig)
        for name in ("cam_high", "cam_left_wrist"):
            cam = make_sim_camera(rig, name, world.clock)
            k = camera_intrinsics(cam)  # no render needed: the model says it
            fovy = float(world.model.cam_fovy[world.model.camera(cam.scene_name).id])
            assert (k.width, k.height) == (320, 240) and k.fx == k.fy
            assert k.fy == pytest.approx(240 / (2 * np.tan(np.radians(fovy) / 2)))
    finally:
        sim_world(rig).close()
