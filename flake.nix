{
  description = "fleetwright: a self-hosted GitOps reconciler that turns YAML fleet specs in a git repository into systemd services and timers";

  # Edition 2024 needs Rust >= 1.85, so follow a recent nixpkgs.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      lib = nixpkgs.lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      # A small stand-in for flake-utils: { x86_64-linux = f "x86_64-linux" pkgs; ... }.
      forAllSystems = f: lib.genAttrs systems (system: f system nixpkgs.legacyPackages.${system});
      cargoToml = builtins.fromTOML (builtins.readFile ./Cargo.toml);
    in
    {
      packages = forAllSystems (
        system: pkgs: {
          fleetwright = pkgs.rustPlatform.buildRustPackage {
            pname = "fleetwright";
            version = cargoToml.package.version;

            # The crate without build output or VCS metadata.
            src = lib.cleanSourceWith {
              src = lib.cleanSource ./.;
              filter = path: type: !(type == "directory" && baseNameOf path == "target");
            };

            cargoLock.lockFile = ./Cargo.lock;

            nativeBuildInputs = [ pkgs.pkg-config ];
            # openssl for git transports; zlib so libz-sys links the system library instead of
            # building its bundled copy. SQLite is bundled by rusqlite, libgit2 by libgit2-sys.
            buildInputs = [
              pkgs.openssl
              pkgs.zlib
            ];

            # The test suite boots a real systemd in a fresh PID + mount namespace and needs root,
            # which the Nix build sandbox does not give.
            doCheck = false;

            meta = {
              description = "Self-hosted GitOps reconciler: YAML fleet specs in git to systemd services and timers";
              mainProgram = "fleetwright";
              platforms = lib.platforms.linux;
            };
          };

          default = self.packages.${system}.fleetwright;
        }
      );

      devShells = forAllSystems (
        system: pkgs: {
          default = pkgs.mkShell {
            packages = [
              pkgs.cargo
              pkgs.rustc
              pkgs.clippy
              pkgs.rustfmt
              pkgs.pkg-config
              pkgs.openssl
              pkgs.sqlite # the sqlite3 CLI, to inspect state and backups
              pkgs.systemd # systemd-analyze, to check calendar expressions and units
            ];
            # For rust-analyzer.
            RUST_SRC_PATH = "${pkgs.rustPlatform.rustLibSrc}";
          };
        }
      );

      nixosModules.default =
        {
          config,
          lib,
          pkgs,
          utils,
          ...
        }:
        let
          cfg = config.services.fleetwright;
          inherit (lib) mkEnableOption mkIf mkOption types;

          underVarLib = lib.hasPrefix "/var/lib/" cfg.stateDir;

          args =
            [
              "${cfg.package}/bin/fleetwright"
              "daemon"
              "--repo"
              cfg.repository
              "--branch"
              cfg.branch
              "--interval"
              cfg.interval
              "--state-dir"
              cfg.stateDir
              "--unit-dir"
              cfg.unitDir
            ]
            ++ lib.optionals cfg.webhook.enable [
              "--listen"
              cfg.webhook.listen
              "--webhook-secret-file"
              cfg.webhook.secretFile
            ]
            ++ cfg.extraArgs;
        in
        {
          options.services.fleetwright = {
            enable = mkEnableOption "fleetwright, the GitOps reconciler for systemd agents";

            package = mkOption {
              type = types.package;
              default = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
              defaultText = lib.literalExpression "fleetwright.packages.\${pkgs.stdenv.hostPlatform.system}.default";
              description = "The fleetwright package to run.";
            };

            repository = mkOption {
              type = types.str;
              example = "https://git.example.org/me/fleet.git";
              description = "The fleet repository: a local path to a git repository or a URL.";
            };

            branch = mkOption {
              type = types.str;
              default = "main";
              description = "The branch whose commits are applied.";
            };

            interval = mkOption {
              type = types.str;
              default = "60s";
              example = "5m";
              description = "How often the repository is polled for new commits.";
            };

            webhook = {
              enable = mkEnableOption "the webhook listener that triggers a reconcile at once on a push";

              listen = mkOption {
                type = types.str;
                default = "127.0.0.1:9797";
                description = "Address and port the webhook listener binds to.";
              };

              secretFile = mkOption {
                # A string, not a path: a path literal would copy the secret into the Nix store.
                type = types.nullOr types.str;
                default = null;
                example = "/run/secrets/fleetwright-webhook";
                description = "File holding the shared secret that webhook requests are signed with. Required when the webhook is enabled.";
              };
            };

            stateDir = mkOption {
              type = types.str;
              default = "/var/lib/fleetwright";
              description = "Where fleetwright keeps its inventory, deploy markers and history.";
            };

            unitDir = mkOption {
              type = types.str;
              default = "/run/systemd/system";
              description = ''
                Where the agents' unit files are written. On NixOS /etc/systemd/system is a link
                into the read-only Nix store: the default is the runtime unit directory, where
                fleetwright also enables units at runtime (the links go under /run too). /run is
                emptied at boot; the daemon, started at boot, writes the fleet again before
                anything of it runs.
              '';
            };

            extraArgs = mkOption {
              type = types.listOf types.str;
              default = [ ];
              example = [
                "--host"
                "vps-1"
              ];
              description = "Extra arguments appended to the `fleetwright daemon` command line.";
            };
          };

          config = mkIf cfg.enable {
            assertions = [
              {
                assertion = !cfg.webhook.enable || cfg.webhook.secretFile != null;
                message = "services.fleetwright.webhook.secretFile must be set when services.fleetwright.webhook.enable is true.";
              }
              {
                assertion = lib.hasPrefix "/" cfg.stateDir;
                message = "services.fleetwright.stateDir must be an absolute path.";
              }
            ];

            # A stateDir outside /var/lib is not covered by StateDirectory=; create it here.
            systemd.tmpfiles.rules = lib.optional (!underVarLib) "d ${cfg.stateDir} 0755 root root - -";

            systemd.services.fleetwright = {
              description = "fleetwright GitOps reconciler";
              wantedBy = [ "multi-user.target" ];
              wants = [ "network-online.target" ];
              after = [ "network-online.target" ];
              # systemd-run (health checks), journalctl (failure reports), ssh-keygen (signed
              # commits), git's ssh for ssh:// remotes.
              path = [
                config.systemd.package
                pkgs.openssh
              ];

              serviceConfig = {
                Type = "notify";
                # escapeSystemdExecArgs quotes each argument and escapes `%` and `$`, which systemd
                # would otherwise expand in ExecStart=.
                ExecStart = utils.escapeSystemdExecArgs args;
                WatchdogSec = "2min";
                Restart = "on-failure";
                RestartSec = "10s";
                # "fleetwright" for the default stateDir.
                StateDirectory = if underVarLib then lib.removePrefix "/var/lib/" cfg.stateDir else "fleetwright";
                # Agents (other users) read their deploy marker in <stateDir>/markers.
                StateDirectoryMode = "0755";
              };
            };
          };
        };
    };
}
