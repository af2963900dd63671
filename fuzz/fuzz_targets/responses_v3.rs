//! cargo-fuzz target `responses_v3`: see `microlock_fuzz::responses_v3`. Built without cargo-fuzz, a replayer.
#![cfg_attr(fuzzing, no_main)]

// Counts the bytes held, for the bound on what endless watch bodies leave held.

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| microlock_fuzz::responses_v3::run(data));

#[cfg(not(fuzzing))]
fn main() {
    microlock_fuzz::replay_main("responses_v3");
}
