"""meshlib: a service mesh as a Python library."""
