// A small JSON reader, enough for manifest.json and safetensors headers.
#pragma once
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace me {

struct Json {
  enum Type { Null, Bool, Num, Str, Arr, Obj } type = Null;
  bool b = false;
  double num = 0;
  std::string str;
  std::vector<Json> arr;
  std::vector<std::pair<std::string, Json>> obj;

  const Json* get(const std::string& k) const {
    for (auto& kv : obj)
      if (kv.first == k) return &kv.second;
    return nullptr;
  }
  bool isNum() const { return type == Num; }

  static Json parse(const std::string& text) {
    const char* p = text.c_str();
    Json j = value(p, p + text.size());
    skip(p, p + text.size());
    if (p != text.c_str() + text.size()) throw std::runtime_error("trailing characters");
    return j;
  }

 private:
  static void skip(const char*& p, const char* e) {
    while (p < e && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
  }
  static void expect(const char*& p, const char* e, char c) {
    skip(p, e);
    if (p >= e || *p != c) throw std::runtime_error(std::string("expected '") + c + "'");
    p++;
  }
  static std::string string(const char*& p, const char* e) {
    expect(p, e, '"');
    std::string s;
    while (p < e && *p != '"') {
      if (*p == '\\') {
        if (++p >= e) break;
        switch (*p) {
          case 'n':
            s += '\n';
            break;
          case 't':
            s += '\t';
            break;
          case 'r':
            s += '\r';
            break;
          case 'b':
            s += '\b';
            break;
          case 'f':
            s += '\f';
            break;
          case 'u': {  // kept as '?' : the fields read here are ASCII
            if (e - p < 5) throw std::runtime_error("bad \\u escape");
            p += 4;
            s += '?';
            break;
          }
          default:
            s += *p;
        }
        p++;
      } else {
        s += *p++;
      }
    }
    if (p >= e) throw std::runtime_error("unterminated string");
    p++;
    return s;
  }
  static Json value(const char*& p, const char* e) {
    skip(p, e);
    if (p >= e) throw std::runtime_error("unexpected end");
    Json j;
    if (*p == '{') {
      p++;
      j.type = Obj;
      skip(p, e);
      if (p < e && *p == '}') {
        p++;
        return j;
      }
      for (;;) {
        std::string k = string(p, e);
        expect(p, e, ':');
        j.obj.emplace_back(std::move(k), value(p, e));
        skip(p, e);
        if (p < e && *p == ',') {
          p++;
          continue;
        }
        expect(p, e, '}');
        return j;
      }
    }
    if (*p == '[') {
      p++;
      j.type = Arr;
      skip(p, e);
      if (p < e && *p == ']') {
        p++;
        return j;
      }
      for (;;) {
        j.arr.push_back(value(p, e));
        skip(p, e);
        if (p < e && *p == ',') {
          p++;
          continue;
        }
        expect(p, e, ']');
        return j;
      }
    }
    if (*p == '"') {
      j.type = Str;
      j.str = string(p, e);
      return j;
    }
    if (e - p >= 4 && std::string(p, 4) == "null") {
      p += 4;
      return j;
    }
    if (e - p >= 4 && std::string(p, 4) == "true") {
      p += 4;
      j.type = Bool;
      j.b = true;
      return j;
    }
    if (e - p >= 5 && std::string(p, 5) == "false") {
      p += 5;
      j.type = Bool;
      return j;
    }
    char* end = nullptr;
    j.num = std::strtod(p, &end);
    if (end == p) throw std::runtime_error("unexpected character");
    j.type = Num;
    p = end;
    return j;
  }
};

}  // namespace me
