"""Built-in replica and global scheduling policies, one short file each."""
