"""The wire: frames, the one place exceptions become error objects, parameter checks and result types.

Nothing here imports torch or transformers, so the server that speaks the protocol stays light.
"""
