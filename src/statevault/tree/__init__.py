"""State trees: a state stored as many content-addressed objects, so saves are incremental.

A state is written as a root node. A node object (envelope encoding 2) is the
MessagePack array `[child digests, value]`: the value is ordinary statevault
MessagePack in which large parts are replaced by references to other objects:

- `REF` (ext 20), payload `digest`: a value stored as a node of its own, because its
  encoding passed `OBJECT_MIN` bytes;
- `CHUNKED_LIST` (ext 21), payload `[count, [[digest, items], ...]]`: a long list cut
  into chunk nodes at content-defined boundaries (each chunk's value is an array of
  items), so an append rewrites only the last chunk and an insert only its neighbours;
- `CHUNKED_BYTES` (ext 22), payload `[length, [[digest, size], ...]]`: a long `bytes`
  cut into fixed-size raw chunks (envelope encoding 3).

The child digests at the head of each node let a reader fetch and decompress the
next level while it decodes this one, and let `verify` and GC walk the tree without
decoding values. Equal subtrees have equal digests and are stored once, across
checkpoints and runs.

A vault-format-1 root (envelope encoding 1, a whole value) is a tree of one leaf:
the reader handles both.
"""

from statevault.tree.read import TreeReader
from statevault.tree.write import TreeWriter, WrittenTree

__all__ = ["TreeReader", "TreeWriter", "WrittenTree"]
