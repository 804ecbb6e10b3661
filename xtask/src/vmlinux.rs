//! Extract the ELF vmlinux (with its .BTF) from a bzImage. (OWNER: helper A)
