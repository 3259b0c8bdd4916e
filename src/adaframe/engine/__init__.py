"""Training, evaluation, experiments of many runs, recognition of video files, tables and figures."""
