//! Keeping the agent's resident memory small: one malloc arena, and memory that was only
//! needed while loading given back to the kernel after start-up.
#![allow(unsafe_code)]

/// Returns freed heap memory to the kernel.
pub fn trim_heap() {
    // SAFETY: malloc_trim only walks glibc's own allocator state; it is thread-safe and
    // has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Limits glibc to one malloc arena per process (each thread would otherwise get its own,
/// each costing resident memory). Call before starting threads.
pub fn single_arena() {
    // SAFETY: mallopt only sets an allocator parameter; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
