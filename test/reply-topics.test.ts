// Where the daemon may publish replies: the replyTopicPattern setting and MQTT topic matching.
import { describe, expect, it } from "vitest";
import { loadConfig, replyFilters } from "../runtime/daemon/config.js";
import { topicMatches } from "../runtime/transports/mqtt.js";

describe("replyTopicPattern", () => {
  it("defaults to robots/+/reply/# and chat's topics under the prefix", () => {
    expect(replyFilters(loadConfig({ env: {}, flags: { topicPrefix: "fab" } }))).toEqual(["robots/+/reply/#", "fab/chat/+/reply/#"]);
  });

  it("takes one filter or a list, from flags or the environment", () => {
    expect(replyFilters(loadConfig({ env: {}, flags: { replyTopicPattern: "cell/+/answers" } }))).toEqual(["cell/+/answers"]);
    const env = { MAMBA_EDGE_REPLY_TOPIC_PATTERN: '["a/#","b/+/c"]' };
    expect(replyFilters(loadConfig({ env }))).toEqual(["a/#", "b/+/c"]);
  });

  it("refuses what is not a topic filter, naming the setting", () => {
    for (const bad of ["a/#/b", "a/b+", "$SYS/#", ""])
      expect(() => loadConfig({ env: {}, flags: { replyTopicPattern: [bad] } })).toThrow(
        /--reply-topic-pattern: expected MQTT topic filters/,
      );
  });
});

describe("topic matching", () => {
  it.each([
    ["robots/+/reply/#", "robots/r1/reply", true],
    ["robots/+/reply/#", "robots/r1/reply/x/y", true],
    ["robots/+/reply/#", "robots/r1/other", false],
    ["robots/+/reply/#", "robots/reply", false],
    ["#", "$SYS/broker", false],
    ["+/x", "$share/x", false],
    ["a/b", "a/b/c", false],
    ["a/+", "a/", true],
  ])("%s against %s: %s", (filter, topic, want) => {
    expect(topicMatches(filter, topic)).toBe(want);
  });
});
