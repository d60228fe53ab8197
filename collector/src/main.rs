fn main() -> std::process::ExitCode {
    collector::main()
}
