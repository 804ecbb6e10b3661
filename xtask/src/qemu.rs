//! Boot QEMU, stream and judge the serial console. (OWNER: helper C)
