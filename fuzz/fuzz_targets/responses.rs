//! cargo-fuzz target `responses`: see `microlock_fuzz::responses`. Built without cargo-fuzz, a replayer.
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| microlock_fuzz::responses::run(data));

#[cfg(not(fuzzing))]
fn main() {
    microlock_fuzz::replay_main("responses");
}
