//! A newc cpio writer and the guest image builder. (OWNER: helper B)
