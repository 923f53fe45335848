"""Redis: the layout (every key and field name, once), the codecs of what is stored, the store
(the atomic per-customer update, reads, partition progress) and the Lua scripts.
"""
