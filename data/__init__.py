"""duet.data: the zarr episode store (layout), the recorder core, the training sampler and
the `duet data` tools. ROS-free. See data/README.md for the layout and the API:

    duet.data.keys      the observation / batch key strings (observation.state, action, ...)
    duet.data.layout    DatasetSpec, ArmSpec, CameraSpec (what a store holds), the JPEG codec
    duet.data.store     EpisodeStore (create / open / episode() / read_episode / recover)
    duet.data.lock      the writer lock: one writer per store (flock locally, a lease on fsspec stores)
    duet.data.recorder  Recorder (latest-value inputs, tick(now), writer thread, health line)
    duet.data.sampler   EpisodeSampler, compute_stats
    duet.data.tools     info, plot, video, drop / merge / split / push, ALOHA and LeRobot I/O
"""
