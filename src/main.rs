fn main() -> std::process::ExitCode {
    pecgate::cli::main()
}
