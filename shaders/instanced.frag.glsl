#version 150
// Flat faces: the normal is the cross product of the position's screen-space derivatives.
// A warm sun, a sky-and-ground ambient, contact shadow (ambient occlusion) near the ground,
// floor lines and lit windows up the walls, and fog towards the horizon.
uniform vec3 u_sun;       // direction towards the sun, world space
uniform float u_unit;     // district scale: how far up the ground darkens a wall
uniform vec3 u_fog_color;
in vec3 v_pos;
in vec4 v_color;
in float v_glow;
in float v_up;
in vec2 v_floors;
in float v_fog;
out vec4 o_color;

void main() {
    vec3 n = normalize(cross(dFdx(v_pos), dFdy(v_pos)));
    float sun = max(dot(n, normalize(u_sun)), 0.0);
    vec3 ambient = mix(vec3(0.32, 0.3, 0.3), vec3(0.42, 0.47, 0.58), n.z * 0.5 + 0.5);
    vec3 light = ambient + vec3(1.0, 0.9, 0.75) * 0.75 * sun;
    float wall = step(abs(n.z), 0.5);
    float ao = mix(1.0, 0.55 + 0.45 * smoothstep(0.0, 0.35 * u_unit, v_pos.z), wall);
    vec3 rgb = v_color.rgb * light * ao;
    if (v_floors.x > 0.5) {
        float f = fract(v_up * v_floors.x);
        rgb *= 1.0 - 0.35 * wall * step(0.86, f);                  // the slab between floors
        float pane = step(0.3, f) * step(f, 0.75) * wall * v_floors.y;
        rgb = mix(rgb, v_color.rgb * 0.25, 0.45 * pane);            // window glass
        rgb += vec3(1.0, 0.85, 0.55) * v_glow * pane;               // lit from inside
    }
    rgb += v_color.rgb * v_glow * 0.35;
    o_color = vec4(mix(rgb, u_fog_color, v_fog), v_color.a);
}
