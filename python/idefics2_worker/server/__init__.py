"""The server: the frame loop on the calling thread, and the model thread that runs requests in order."""
