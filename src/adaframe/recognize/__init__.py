"""Recognition of video files: feature extraction, the Recognizer (the agent on raw files), collections of files."""
