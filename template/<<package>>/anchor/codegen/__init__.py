"""Code generators behind `make gen`: definitions in api/ and sql/ in, typed Python in gen/ out."""
