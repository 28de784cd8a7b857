"""Small applications that run inside the mesh for demos and tests."""
