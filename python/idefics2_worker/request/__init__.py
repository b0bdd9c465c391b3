"""What both decoders share about one request: the loaded model, the prompt, token streaming and the result."""
