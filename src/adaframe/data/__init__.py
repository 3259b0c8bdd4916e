"""Features on disk, the synthetic feature data set, lists of video files."""
