import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 600_000,
    // The integration suite shares one managed environment and a CPU with two cores: run files one at a time.
    fileParallelism: false,
    globalSetup: ["test/global-setup.ts"],
  },
});
