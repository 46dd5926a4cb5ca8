use std::process::ExitCode;

fn main() -> ExitCode {
    image_mirror_webhook::cli::main()
}
