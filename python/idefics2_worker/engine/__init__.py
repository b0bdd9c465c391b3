"""The model behind the server: loading it as the reference program does, the reference generate() path,
compatibility shims and machine info. It hands generations to the fast decoder (`decode/`) when one is in use."""
