"""The rig URDF against physics: forward kinematics of duet.hardware.urdf.rig_urdf(rig) versus
the MuJoCo sim's body and camera poses at random follower joint configurations.

    python bench/bench_urdf_fk.py [--rig aloha_sim] [--configurations 1000] [--seed 0]

Per configuration every follower link (shoulder .. fingers, both arms) is compared by world
position and rotation (the gripper servo's prop link by position only: the URDF turns it with
the gripper value, the sim does not), and every simulated camera by position and optical axis.
Joint values are drawn uniformly within the arm model's limits (gripper 0..1).
"""

from __future__ import annotations

import argparse

from duet.hardware.rig import load_rig
from duet.hardware.urdf import compare_with_sim


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rig", default="aloha_sim", help="a sim rig (mock_backend: sim)")
    ap.add_argument("--configurations", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    r = compare_with_sim(load_rig(args.rig), args.configurations, args.seed)
    print(f"rig {args.rig}: {r.configurations} random configurations, seed {args.seed}")
    print(f"  {r.bodies} follower bodies and {r.cameras} cameras per configuration")
    print(f"  max position error       {r.max_position_error_m * 1000:.3g} mm")
    print(f"  max body rotation error  {r.max_rotation_error_deg:.3g} deg")
    print(f"  max camera axis error    {r.max_camera_axis_error_deg:.3g} deg")


if __name__ == "__main__":
    main()
